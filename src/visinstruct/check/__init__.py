"""`visinstruct check`: a pre-flight report of what one trainer (LLaVA, LLaVA-NeXT, LLaMA-Factory, ms-swift)
will refuse, drop, repair or silently mis-train in a record file, with an optional corrected copy.

targets.py holds what each trainer's loader does, as data; shape.py reads a record the way the target
does; checks.py, images.py, boxes.py and tokens.py find the problems; fix.py repairs the unambiguous ones;
run.py streams the file and writes the report (`visinstruct.check.run.check(path, CheckOptions(...))`).
"""
