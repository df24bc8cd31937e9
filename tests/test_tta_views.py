"""bench.tta_views: the views it takes of a face, and its table on a tiny voted dataset."""

from __future__ import annotations

import numpy as np

from bench import tta_views


def test_views_move_the_crop_without_a_border():
    faces = np.zeros((2, 48, 48), np.uint8)
    faces[:, 20:28, 20:28] = 200
    assert (tta_views.moved(faces) == faces).all()
    right = tta_views.moved(faces, dx=2)
    assert (right[:, 20:28, 22:30] == 200).all() and (right[:, :, :22] == 0).all()
    assert (tta_views.moved(faces, scale=1.08)[:, 19:29, 19:29] > 0).all()  # zoomed in: the square grows
    edges = tta_views.moved(np.full((1, 48, 48), 90, np.uint8), scale=0.9, dy=3)
    assert (edges == 90).all()  # edges repeat: no black border


def test_every_view_set_is_scored_for_the_members_together_and_alone_then_timed(
    voted_data, untrained_ferplus_models, tmp_path, capsys
):
    members = untrained_ferplus_models(2)
    args = ["--members", *members, "--data", str(voted_data), "--served", members[0], "--repeats", "2"]
    assert tta_views.main(args) == 0
    scores, timings = capsys.readouterr().out.strip().split("\n\n")
    rows = scores.splitlines()[1:]
    assert len(rows) == 3 * len(tta_views.VIEW_SETS)  # the pair, then each member alone
    passes = {(row.count(".keras"), int(row.split()[3])) for row in rows}  # (members, passes)
    sizes = {len(names) for names in tta_views.VIEW_SETS.values()}
    assert passes == {(members, members * size) for members in (1, 2) for size in sizes}
    assert [int(line.split()[0]) for line in timings.splitlines()[1:]] == sorted(sizes)

    assert tta_views.main(["--members", str(tmp_path / "missing.keras"), "--data", str(voted_data)]) == 2
    assert "not found" in capsys.readouterr().err
