"""Lessons: guided walks through real runs, one idea of the article at a time.

A lesson (a TOML file here) opens guests in modes, then makes *stops*: each says where to go
("the next trapped instruction", "the next hole", "step 4,080"), what to read there, and what
the engine should show when it gets there (the last instruction, its class, a hole). Nothing
is scripted: the places are found in the run as it happens, and `vmlab lesson NAME --walk`
(a test runs it for every lesson) checks each expectation against the engine.
"""
