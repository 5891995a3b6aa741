"""The weight store: a zoo is a folder (or a pyarrow.fs URI: file://, s3://, gs://) holding

    manifest.json                              zoo seed, recipe, data, schema version
    manifest.d/                                one record per family (asym seed, layout) and per writer (versions)
    members/family=<f>/pack-<hash>.parquet     one row per member: config, metrics, weights
    checkpoints/family=<f>/pack-<hash>.parquet one row per (member, epoch), when recorded
    _quarantine/...                            files `verify` moved aside

Three verbs, `commit` a pack of results (atomic; a retry is harmless), read through
`open_zoo(path)`, and `verify` (plus `upgrade`, once per schema v1 zoo):

    z = zoo.open_zoo("zoos/main")                        # or "s3://bucket/zoos/main"
    df = z.members(where="status == 'ok' and test_acc > 0.5")   # pandas, no weights
    w, ids = z.weights("w_asym")                         # [n, 60634] float32, sorted by index
    for w, ids in z.iter_weights("standard", batch_size=1024): ...   # larger than memory
    data = z.torch_dataset("standard", target="test_acc")

Every family shares one schema (v2: a parameter vector is one large_binary value of P
little-endian float32), so plain tools read the whole zoo as one dataset:
pyarrow.dataset.dataset("<zoo>/members", partitioning="hive"), DuckDB's
read_parquet('<zoo>/members/*/*.parquet', hive_partitioning=true), pandas.read_parquet(
"<zoo>/members", partitioning=None); np.frombuffer(value, "<f4") decodes a vector. Those see every
committed file as is: a member committed twice (two writers racing on overlapping packs)
appears twice there, while symzoo's readers keep one row per member_id (`verify` lists such
duplicates). `upgrade` rewrites a schema v1 zoo to v2 in place.
"""
from .fs import atomic_write_parquet
from .manifest import ManifestMismatch
from .reader import SkippedFileWarning, WeightDataset, Zoo, open_zoo
from .schema import SCHEMA_VERSION, checkpoints_schema, members_schema, params_array, params_matrix
from .upgrade import UpgradeReport, upgrade
from .verify import VerifyReport, verify
from .writer import commit, commit_tables, init_zoo, pack_name

__all__ = [
    "SCHEMA_VERSION", "ManifestMismatch", "SkippedFileWarning", "UpgradeReport", "VerifyReport", "WeightDataset",
    "Zoo", "atomic_write_parquet", "checkpoints_schema", "commit", "commit_tables", "init_zoo", "members_schema",
    "open_zoo", "pack_name", "params_array", "params_matrix", "upgrade", "verify",
]
