"""Capture: record a sample of a policy's chat requests with the answers that served them.

The hot path only decides whether a request is sampled (`Capture.sample`, when its policy has `capture`)
and, for a sampled stream, keeps the bytes it relays (`Sample.feed`). When the request ends, the
sample goes onto a bounded queue (`Capture.offer`), never waiting: a full queue drops it and counts the
drop. A background task redacts the records and hands them to a sink (`sink.py`: local JSONL files,
rotated and size-capped, one file set per task) in a worker thread. Nothing here raises into a request.
"""
