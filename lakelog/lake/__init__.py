"""The lake contract both sides share: folder layout, part-file names, table schemas, dump layout,
argument checks and the checker's environment variables. No torch, no query engine: the write side
and the read side both stand on it, and a reader that has neither installed can still use it.
"""
