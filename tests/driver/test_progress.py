"""Row-level progress (driver/summary.py): counts from committed shards and in-flight part files."""
from __future__ import annotations

import json

import fsspec
import pyarrow as pa

from driver.summary import PartScanner, PartStats, Progress, progress_counts, with_decoded
from stages.write.sink import write_ipc


def marker(rows: int, outputs: int, nfe: int, budget: int) -> dict:
    return {"rows": rows, "outputs": outputs, "nfe": nfe, "step_budget": budget}


def test_counts_committed_and_in_flight_rows() -> None:
    committed = {"a": marker(10, 9, 30, 144), "old": marker(20, 20, 80, 320)}
    parts = {"b": [PartStats(40, 16, 15, 60, 240), PartStats(40, 16, 16, 64, 256)],
             "a": [PartStats(10, 10, 9, 30, 144)]}                       # committed: its parts are ignored
    p = progress_counts(committed, parts, n_shards=5, already={"old"})
    assert p.rows_done == 10 + 20 + 32 and p.shards_done == 2
    assert p.rows_total == 10 + 20 + 40 + round(2 * 70 / 3)          # two shards not seen yet: the mean size
    assert (p.outputs, p.nfe, p.step_budget) == (9 + 31, 30 + 124, 144 + 496)   # "old" is an earlier run's


def test_in_flight_rows_are_capped_at_the_shard_size() -> None:
    parts = {"b": [PartStats(20, 16, 16, 64, 256), PartStats(20, 16, 16, 64, 256)]}   # a retry wrote twice
    p = progress_counts({}, parts, n_shards=1, already=set())
    assert p.rows_done == 20 and p.rows_total == 20


def test_nothing_seen_yet_has_no_total() -> None:
    p = progress_counts({}, {}, n_shards=3, already=set())
    assert p.rows_done == 0 and p.rows_total is None and p.shards_done == 0


def test_rows_of_a_shard_whose_end_is_not_read_yet_count_without_a_made_up_total() -> None:
    parts = {"big": [PartStats(0, 16, 16, 64, 256), PartStats(0, 16, 16, 64, 256)]}   # the end not read yet
    p = progress_counts({}, parts, n_shards=1, already=set())
    assert p.rows_done == 32 and p.rows_total is None                # not "32 of 32, 100 %"
    p = progress_counts({"a": marker(100, 100, 400, 1600)}, parts, n_shards=2, already=set())
    assert p.rows_done == 132 and p.rows_total == 200                # the unknown one: the known mean


def test_rows_the_actors_decoded_count_before_they_are_written() -> None:
    start = Progress(rows_done=30, outputs=30, nfe=90, step_budget=480)     # kept from an interrupted attempt
    written = Progress(rows_done=46, rows_total=None, outputs=45, nfe=130, step_budget=720)
    decoded = {"rows": 64, "outputs": 63, "nfe": 200, "step_budget": 1008}  # 16 of them written so far
    p = with_decoded(written, start, decoded)
    assert (p.rows_done, p.outputs, p.nfe, p.step_budget) == (94, 93, 290, 1488)
    assert with_decoded(written, start, None) == written                    # no counter: the parts alone


def test_decoded_rows_never_pass_the_total_nor_go_below_what_is_written() -> None:
    written = Progress(rows_done=90, rows_total=100, outputs=90)
    assert with_decoded(written, Progress(), {"rows": 130, "outputs": 130, "nfe": 0, "step_budget": 0}).rows_done == 100
    assert with_decoded(written, Progress(), {"rows": 10, "outputs": 10, "nfe": 0, "step_budget": 0}).rows_done == 90


def test_scanner_reads_each_part_once(tmp_path) -> None:
    fs = fsspec.filesystem("file")
    root = str(tmp_path)
    part = pa.table({"shard_rows": [5, 5, 5], "error": ["", "empty prompt", ""], "nfe": [4, None, 6],
                     "step_budget": [16, None, 16], "output": ["x", None, "y"]})
    fs.makedirs(f"{root}/_parts/s1", exist_ok=True)
    write_ipc(fs, f"{root}/_parts/s1/000000000-3-abc.rows.arrow", part)
    (tmp_path / "_parts" / "s1" / "000000003-2-def.rows.arrow.tmp-1234").write_bytes(b"half a file")
    scanner = PartScanner(fs, root)
    assert scanner.scan(set()) == {"s1": [PartStats(5, 3, 2, 10, 32)]}
    fs.rm(f"{root}/_parts/s1/000000000-3-abc.rows.arrow")   # read once: later scans keep what it held
    assert scanner.scan(set()) == {"s1": [PartStats(5, 3, 2, 10, 32)]}
    (tmp_path / "_done").mkdir()
    (tmp_path / "_done" / "s1.json").write_text(json.dumps(marker(5, 4, 20, 80)))
    assert scanner.scan({"s1"})["s1"]   # still reported; progress_counts prefers the marker


def test_committed_markers_are_read_once(tmp_path) -> None:
    from driver.resume import committed_shards
    fs = fsspec.filesystem("file")
    (tmp_path / "_done").mkdir()
    (tmp_path / "_done" / "a.json").write_text(json.dumps(marker(5, 5, 20, 80)))
    first = committed_shards(fs, str(tmp_path))
    (tmp_path / "_done" / "a.json").write_text("not json: would fail if read again")
    (tmp_path / "_done" / "b.json").write_text(json.dumps(marker(3, 2, 8, 48)))
    again = committed_shards(fs, str(tmp_path), first)
    assert again == {"a": marker(5, 5, 20, 80), "b": marker(3, 2, 8, 48)}
