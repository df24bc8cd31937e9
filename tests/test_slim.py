"""training.slim: a run's weights for checkpoints/, without optimizer state and rounded to float16."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from training.slim import is_slim, main, round_weights_to_float16, slim


@pytest.fixture()
def trained_with_optimizer(tmp_path):
    """An 8-class width-8 compact CNN after one optimizer step, saved with its optimizer state (as last.keras is)."""
    import keras

    from training.model import make_model
    from webapp.vision.labels import EMOTIONS_WITH_CONTEMPT

    keras.utils.set_random_seed(3)
    model = make_model(width=8, classes=EMOTIONS_WITH_CONTEMPT)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy")
    faces = np.random.default_rng(0).random((8, 48, 48, 1), dtype=np.float32)
    model.fit(faces, np.eye(8, dtype=np.float32), epochs=1, verbose=0)
    path = tmp_path / "last.keras"
    model.save(path)
    return path


def weights_bytes(keras_file) -> int:
    with zipfile.ZipFile(keras_file) as archive:
        return archive.getinfo("model.weights.h5").file_size


def test_slim_halves_the_weights_and_loads_as_float32(trained_with_optimizer, tmp_path):
    import keras

    from webapp.vision.layers import model_classes

    slim_path = tmp_path / "checkpoint" / "best.keras"
    assert slim(trained_with_optimizer, slim_path) > 0
    assert is_slim(slim_path) and not is_slim(trained_with_optimizer)
    original = keras.models.load_model(trained_with_optimizer)
    plain_path = tmp_path / "plain.keras"
    keras.models.load_model(trained_with_optimizer, compile=False).save(plain_path)  # float32, no optimizer
    plain_size, slim_size = (weights_bytes(path) for path in (plain_path, slim_path))
    float32_bytes = sum(int(np.prod(w.shape)) * 4 for w in original.weights)
    # every array at half its size; h5's own overhead (large next to a width-8 model) is unchanged
    assert plain_size - slim_size > 0.45 * float32_bytes
    assert weights_bytes(trained_with_optimizer) > plain_size + float32_bytes  # what the optimizer slots cost
    assert not is_slim(plain_path)  # no optimizer state, but float32

    reloaded = keras.models.load_model(slim_path)
    assert {w.dtype for w in reloaded.weights} == {"float32"}
    assert model_classes(reloaded) == model_classes(original)
    assert getattr(reloaded, "optimizer", None) is None
    for before, after in zip(original.weights, reloaded.weights, strict=True):
        values = np.asarray(before)
        np.testing.assert_allclose(np.asarray(after), values, rtol=2**-10, atol=1e-7)
    faces = np.random.default_rng(1).random((4, 48, 48, 1), dtype=np.float32)
    np.testing.assert_allclose(reloaded.predict(faces, verbose=0), original.predict(faces, verbose=0), atol=2e-3)


def test_is_slim_wants_float16_weights_and_no_optimizer_state(trained_with_optimizer, tmp_path):
    from training.slim import WEIGHTS_ENTRY

    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(trained_with_optimizer) as archive:
        entries = archive.namelist()
        archive.extractall(unpacked)
    round_weights_to_float16(unpacked / WEIGHTS_ENTRY)  # the optimizer's slots stay, in float16
    rounded = tmp_path / "rounded.keras"
    with zipfile.ZipFile(rounded, "w") as archive:
        for entry in entries:
            archive.write(unpacked / entry, entry)
    assert not is_slim(rounded)
    no_weights = tmp_path / "no_weights.keras"
    with zipfile.ZipFile(no_weights, "w") as archive:
        archive.writestr("config.json", "{}")
    assert not is_slim(no_weights)


def test_a_weight_beyond_float16_is_refused(tmp_path):
    import h5py

    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as store:
        store.create_dataset("layers/dense/vars/0", data=np.array([1.0, 1e6], np.float32))
    with pytest.raises(ValueError, match="float16's range"):
        round_weights_to_float16(path)
    with h5py.File(path, "w") as store:
        store.create_dataset("layers/dense/vars/0", data=np.array([1.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="NaN or infinity"):
        round_weights_to_float16(path)


def test_the_command_compares_both_files_on_val(trained_with_optimizer, tmp_path, voted_data, capsys):
    assert main([str(trained_with_optimizer), str(tmp_path / "slim.keras"), "--data", str(voted_data)]) == 0
    printed = capsys.readouterr().out
    assert "weight arrays in float16" in printed
    assert "val: top class changed on" in printed and "of 14 faces" in printed  # 7 emotions x 2


def test_a_missing_source_or_the_source_as_destination_is_a_usage_error(trained_with_optimizer, tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "absent.keras"), str(tmp_path / "out.keras")])
    with pytest.raises(SystemExit):
        main([str(trained_with_optimizer), str(trained_with_optimizer)])


def test_with_record_keeps_what_resume_and_the_card_read(trained_with_optimizer, tmp_path, capsys):
    run = trained_with_optimizer.parent
    (run / "hparams.json").write_text('{"width": 8}')
    (run / "state.json").write_text('{"epochs_done": 1}')
    kept = tmp_path / "checkpoints" / "run"
    assert main([str(trained_with_optimizer), str(kept / "last.keras"), "--with-record"]) == 0
    assert sorted(path.name for path in kept.iterdir()) == ["hparams.json", "last.keras", "state.json"]
    assert (kept / "state.json").read_text() == '{"epochs_done": 1}'
    assert "copied hparams.json, state.json" in capsys.readouterr().out


def test_with_record_beside_the_source_keeps_the_record_where_it_is(trained_with_optimizer, capsys):
    run = trained_with_optimizer.parent
    (run / "hparams.json").write_text('{"width": 8}')
    assert main([str(trained_with_optimizer), str(run / "slim.keras"), "--with-record"]) == 0
    assert is_slim(run / "slim.keras") and (run / "hparams.json").read_text() == '{"width": 8}'
    assert "the record (hparams.json) is there already" in capsys.readouterr().out


def test_an_existing_destination_or_record_is_replaced_only_when_asked(trained_with_optimizer, tmp_path):
    kept = tmp_path / "kept"
    kept.mkdir()
    (trained_with_optimizer.parent / "log.csv").write_text("epoch,val_accuracy\n0,0.5\n")
    (kept / "last.keras").write_bytes(b"last session's weights")
    with pytest.raises(SystemExit):
        main([str(trained_with_optimizer), str(kept / "last.keras")])
    assert (kept / "last.keras").read_bytes() == b"last session's weights"
    (kept / "last.keras").unlink()
    (kept / "log.csv").write_text("last session's log")
    with pytest.raises(SystemExit):
        main([str(trained_with_optimizer), str(kept / "last.keras"), "--with-record"])
    assert main([str(trained_with_optimizer), str(kept / "last.keras"), "--with-record", "--replace"]) == 0
    assert is_slim(kept / "last.keras") and (kept / "log.csv").read_text().startswith("epoch")
