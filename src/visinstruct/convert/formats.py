"""The formats and routes of `convert`, importable without loading the converters (pyarrow, PIL)."""

FORMATS = ("llava", "parquet", "messages", "wds", "svit", "hf-folder")
OUTPUT_ONLY = ("wds", "hf-folder")
ROUTES = {("parquet", "llava"), ("llava", "parquet"), ("llava", "messages"), ("messages", "llava"),
          ("llava", "wds"), ("svit", "llava"), ("llava", "hf-folder")}
FOLDER_OUTPUTS = ("parquet", "wds", "hf-folder")  # outputs that may be folders, replaced whole
