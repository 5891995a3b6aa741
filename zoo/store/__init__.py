"""The weight store: a zoo is a folder (or a pyarrow.fs URI: file://, s3://, gs://) holding

    manifest.json                              seeds, families and layouts, recipe, data, versions
    members/family=<f>/pack-<hash>.parquet     one row per member: config, metrics, weights
    checkpoints/family=<f>/pack-<hash>.parquet one row per (member, epoch), when recorded
    _quarantine/...                            files `verify` moved aside

Three verbs: `commit` a pack of results (atomic; a retry is harmless), read through
`open_zoo(path)`, and `verify`:

    z = zoo.open_zoo("zoos/main")                        # or "s3://bucket/zoos/main"
    df = z.members(where="status == 'ok' and test_acc > 0.5")   # pandas, no weights
    w, ids = z.weights("w_asym")                         # [n, 60634] float32, sorted by index
    for w, ids in z.iter_weights("standard", batch_size=1024): ...   # larger than memory
    data = z.torch_dataset("standard", target="test_acc")

Plain tools read it too: pyarrow.dataset.dataset("<zoo>/members/family=standard") (one family
per dataset: their P differ) or DuckDB's read_parquet('<zoo>/members/*/*.parquet',
hive_partitioning=true). Those see every committed file as is: a member committed twice (two
writers racing on overlapping packs) appears twice there, while symzoo's readers keep one row
per member_id (`verify` lists such duplicates).
"""
from .fs import atomic_write_parquet
from .manifest import ManifestMismatch
from .reader import SkippedFileWarning, WeightDataset, Zoo, open_zoo
from .schema import SCHEMA_VERSION, checkpoints_schema, members_schema, params_type
from .verify import VerifyReport, verify
from .writer import commit, commit_tables, init_zoo, pack_name

__all__ = [
    "SCHEMA_VERSION", "ManifestMismatch", "SkippedFileWarning", "VerifyReport", "WeightDataset", "Zoo",
    "atomic_write_parquet", "checkpoints_schema", "commit", "commit_tables", "init_zoo", "members_schema",
    "open_zoo", "pack_name", "params_type", "verify",
]
