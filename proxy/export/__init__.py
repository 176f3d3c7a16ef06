"""`shadowtap export`: recorded requests and answers as JSONL (OpenAI chat messages), a Batch
API input file, or Parquet — redaction respected, every left-out row counted with its reason.

`rows` selects and redacts, `formats` writes, `run` ties them to files, `command` is the CLI.
"""
