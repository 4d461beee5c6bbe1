"""Batch scoring on Ray Data: every audio file under a folder, glob or list (local or s3://) scored with a
bundle into Parquet, on a local Ray or an existing cluster; resumable. A stage above the runtime: it uses
`ser.runtime` as the service does, and nothing below imports it. Needs the `ser[batch]` extra (Ray, pyarrow).
"""

from ser.batch.job import BatchOptions, BatchSummary, JobInterrupted, Progress, score_files
from ser.batch.output import Output, result_schema
from ser.batch.storage import BatchError, Storage, list_inputs

__all__ = [
    "BatchError",
    "BatchOptions",
    "BatchSummary",
    "JobInterrupted",
    "Output",
    "Progress",
    "Storage",
    "list_inputs",
    "result_schema",
    "score_files",
]
