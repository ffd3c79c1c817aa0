"""Benchmark scripts (run as `python bench/<name>.py`; the editable install puts the project root on sys.path,
so they import each other as `bench.<name>`). Results: bench/results/<name>.json."""
