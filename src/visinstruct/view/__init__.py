"""`visinstruct view`: a local web app to page through records with their images, search and filter them.

index    byte offsets of each record of a .jsonl / .json list, built once and cached beside the file
jsonscan the streaming byte scanner that finds the items of a top-level JSON list
dataset  a record file (jsonl, json list, parquet file or folder) read by row number, never loaded whole
query    search and filters: a cheap test on the raw bytes, then the exact test on the parsed record
caseless a bytes pattern for case-insensitive search in raw UTF-8 (no decoding)
markup   a turn's text cut into text, `<image>` chips, `<st>…<ed>` references and boxes
api      the JSON answers (pages, one record, a time-boxed search scan)
server   the http.server app: the page, the API, images from under the image root only
"""
