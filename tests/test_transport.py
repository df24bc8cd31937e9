"""`training.transport`: the data and the models travel to and from a GPU machine unchanged."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from training import transport


def test_data_pack_unpacks_to_the_same_files_and_votes(voted_data, tmp_path):
    (tmp_path / "pack").mkdir()
    count = transport.pack_data(voted_data, tmp_path / "pack" / "faces.npz", {"val": 5})
    originals = sorted(p.relative_to(voted_data) for p in voted_data.rglob("*.png"))
    assert count == len([p for p in originals if p.parts[0] == "train"]) + 5
    assert transport.main(["unpack-data", str(tmp_path / "pack" / "faces.npz"), str(tmp_path / "out")]) == 0
    unpacked = sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*.png"))
    assert len([p for p in unpacked if p.parts[0] == "val"]) == 5 and set(unpacked) <= set(originals)
    for name in unpacked:
        assert (tmp_path / "out" / name).read_bytes() == (voted_data / name).read_bytes()
    votes = "ferplus_votes.csv"
    assert (tmp_path / "out" / votes).read_text() == (voted_data / votes).read_text()
    # --val 0 packs train only (the trainer then runs unscored)
    assert transport.main(["pack-data", str(voted_data), str(tmp_path / "pack" / "train.npz"), "--val", "0"]) == 0
    assert transport.main(["unpack-data", str(tmp_path / "pack" / "train.npz"), str(tmp_path / "train")]) == 0
    assert {p.name for p in (tmp_path / "train").iterdir() if p.is_dir()} == {"train"}


def test_a_pack_cannot_write_outside_its_folder(tmp_path):
    for bad in (b"../../escape.png", b"/tmp/escape.png"):
        names = np.frombuffer(b"train/happy/0.png\n" + bad, np.uint8)
        np.savez(tmp_path / "evil.npz", blob=np.zeros(4, np.uint8), offsets=np.array([0, 2, 4]), names=names)
        with pytest.raises(ValueError, match="not a path inside"):
            transport.unpack_data(tmp_path / "evil.npz", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing is written before every name is checked
    assert transport.main(["pack-data", str(tmp_path / "empty"), str(tmp_path / "x.npz")]) == 2


@pytest.mark.parametrize("stem_convs", [1, 2])
def test_models_travel_as_float16_and_come_back_whole(tmp_path, stem_convs):
    from training.augment import AUGMENTATION_BLUR_SIGMA
    from training.model import make_model
    from webapp.vision.labels import EMOTIONS_WITH_CONTEMPT
    from webapp.vision.layers import load_model, model_classes

    (tmp_path / "trained").mkdir()
    (tmp_path / "back").mkdir()
    original = make_model(
        width=8, blur_sigma=AUGMENTATION_BLUR_SIGMA, classes=EMOTIONS_WITH_CONTEMPT, stem_convs=stem_convs
    )
    rng = np.random.default_rng(0)  # trained-looking weights: BatchNorm statistics away from 0 and 1
    original.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in original.get_weights()])
    original.save(tmp_path / "trained" / "w8-s0.keras")
    assert transport.pack_models(tmp_path / "trained", tmp_path / "back") == ["w8-s0"]
    np.savez(tmp_path / "back" / "teacher.npz", probabilities=np.zeros((1, 8)))  # skipped: not a model
    assert transport.unpack_models(tmp_path / "back", tmp_path / "here") == [tmp_path / "here" / "w8-s0.keras"]
    rebuilt = load_model(tmp_path / "here" / "w8-s0.keras")
    assert model_classes(rebuilt) == EMOTIONS_WITH_CONTEMPT and rebuilt.name == "w8-s0"
    faces = np.random.default_rng(0).random((4, 48, 48, 1)).astype(np.float32)
    np.testing.assert_allclose(rebuilt.predict(faces, verbose=0), original.predict(faces, verbose=0), atol=5e-3)
    for kept, packed in zip(rebuilt.get_weights(), original.get_weights(), strict=True):
        np.testing.assert_allclose(kept, packed, rtol=1e-3)  # float16: three significant digits

    # packs made before --stem-convs existed have no stem in their recipe: one conv
    recipe = {"width": 8, "classes": list(EMOTIONS_WITH_CONTEMPT), "blur_sigma": 0.0}
    assert [w.shape for w in transport.model_from_recipe(recipe).get_weights()] == [
        w.shape for w in make_model(width=8, classes=EMOTIONS_WITH_CONTEMPT).get_weights()
    ]

    # a model that is not a compact CNN cannot be rebuilt there: refused before the GPU time is spent
    import keras

    inputs = keras.Input((48, 48, 1))
    keras.Model(inputs, keras.layers.Dense(8)(keras.layers.Flatten()(inputs))).save(tmp_path / "trained" / "x.keras")
    assert transport.main(["pack-models", str(tmp_path / "trained"), str(tmp_path / "back")]) == 2


def test_gpu_run_script_parses():
    assert subprocess.run(["bash", "-n", "training/gpu_run.sh"]).returncode == 0


def test_a_pack_goes_into_a_new_folder_or_into_the_dataset_itself(voted_data, tmp_path):
    import shutil

    data = shutil.copytree(voted_data, tmp_path / "data")
    # .device/ does not exist on a fresh checkout
    assert transport.main(["pack-data", str(data), str(tmp_path / ".device" / "faces.npz")]) == 0
    assert (tmp_path / ".device" / "ferplus_votes.csv").read_text() == (data / "ferplus_votes.csv").read_text()
    # beside its own vote table: not copied onto itself, and the pack is not packed into itself
    assert transport.main(["pack-data", str(data), str(data / "faces.npz")]) == 0
    assert transport.main(["unpack-data", str(data / "faces.npz"), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "ferplus_votes.csv").is_file() and not (tmp_path / "out" / "faces.npz").exists()


def test_fer2013_csv_is_refused_with_the_layout_to_use(tmp_path, capsys):
    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n")
    assert transport.main(["pack-data", str(tmp_path / "fer2013.csv"), str(tmp_path / "faces.npz")]) == 2
    assert "pack-data packs a dataset folder (<split>/<emotion>/ images" in capsys.readouterr().err


def test_unpacking_never_writes_over_existing_files(voted_data, tmp_path, capsys):
    pack = tmp_path / "faces.npz"
    assert transport.main(["pack-data", str(voted_data), str(pack)]) == 0
    assert transport.main(["unpack-data", str(pack), str(tmp_path / "out")]) == 0
    assert transport.main(["unpack-data", str(pack), str(tmp_path / "out")]) == 2
    assert "exists: unpack into a new folder" in capsys.readouterr().err
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "w8-s1.npz").write_bytes(b"")
    (tmp_path / "students").mkdir()
    kept = tmp_path / "students" / "w8-s1.keras"
    kept.write_bytes(b"a model trained earlier")
    assert transport.main(["unpack-models", str(tmp_path / "models"), str(tmp_path / "students")]) == 2
    assert "w8-s1.keras exists" in capsys.readouterr().err and kept.read_bytes() == b"a model trained earlier"
