"""Capture: record a sample of a policy's chat requests with the answers that served them.

The request path only decides whether a request is sampled (`Capture.sample`, in the pipeline's route
stage, when its policy has `capture`); a sampled request's record keeps its answer as the relay sends it.
When the request ends, the sample goes onto a bounded queue (`Capture.offer`, from an observer), never
waiting: a full queue drops it and counts the drop. A background task redacts the records and hands
them to a sink (`sink.py`: local JSONL files, rotated and size-capped, one file set per task) in a worker
thread. Nothing here raises into a request.
"""
