"""FER-2013 loaders on small CSV and folder fixtures made here, and on ../shared when present."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from training.data import DataError, check_distinct_splits, load_csv, load_folder, load_split
from webapp.vision.labels import EMOTIONS


def write_csv(path, rows):
    lines = ["emotion,pixels,Usage"] + [
        f"{label},{' '.join(map(str, pixels))},{usage}" for label, pixels, usage in rows
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def fer_csv(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        (i % 7, rng.integers(0, 256, 2304), usage)
        for usage, n in (("Training", 14), ("PublicTest", 7), ("PrivateTest", 3))
        for i in range(n)
    ]
    return write_csv(tmp_path / "fer2013.csv", rows)


@pytest.mark.parametrize("split, count", [("train", 14), ("val", 7), ("test", 3)])
def test_csv_splits_follow_usage(fer_csv, split, count):
    data = load_split(fer_csv, split)
    assert data.images.shape == (count, 48, 48) and data.images.dtype == np.uint8
    assert data.labels.tolist() == [i % 7 for i in range(count)]


def test_folder_layout_with_test_as_held_out_split(fer_folders):
    train, held_out = load_split(fer_folders, "train"), load_split(fer_folders, "val")
    assert len(train) == 21 and len(held_out) == 14
    assert train.class_counts().tolist() == [3] * 7


def test_a_folder_of_emotion_folders_loads_directly(fer_folders):
    assert len(load_split(fer_folders / "test", "val")) == 14


def test_kaggle_test_folder_gives_val_its_public_and_test_its_private_faces(fer_folders):
    """Kaggle's copy has train/ and test/, test/ holding both held-out sets: val must not fit PrivateTest."""
    for emotion in EMOTIONS:
        folder = fer_folders / "test" / emotion
        for i, file in enumerate(sorted(folder.iterdir())):
            file.rename(folder / f"{('PublicTest', 'PrivateTest')[i % 2]}_{i}.jpg")
    val, test = load_split(fer_folders, "val"), load_split(fer_folders, "test")
    assert len(val) == len(test) == 7 and val.source.endswith("test[PublicTest_*]")
    assert all("/PublicTest_" in key for key in val.keys) and all("/PrivateTest_" in key for key in test.keys)


def test_a_folder_of_emotion_folders_cannot_be_both_train_and_val(fer_folders):
    check_distinct_splits(fer_folders)
    with pytest.raises(DataError, match="both train and val"):
        check_distinct_splits(fer_folders / "train")


def test_capitalised_class_folders_are_keyed_lowercase(tmp_path):
    (tmp_path / "Angry").mkdir()
    cv2.imwrite(str(tmp_path / "Angry" / "Training_1.jpg"), np.zeros((48, 48), np.uint8))
    assert load_folder(tmp_path).keys == ("angry/Training_1.jpg",)


def test_face_crops_of_any_size_and_colour_are_resized(tmp_path):
    (tmp_path / "happy").mkdir()
    cv2.imwrite(str(tmp_path / "happy" / "big.png"), np.zeros((120, 100, 3), np.uint8))
    data = load_folder(tmp_path)
    assert data.images.shape == (1, 48, 48) and data.labels.tolist() == [EMOTIONS.index("happy")]


def test_wrong_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_split(tmp_path / "nope", "train")


def test_unknown_class_folder_is_a_clear_error(fer_folders):
    (fer_folders / "train" / "bored").mkdir()
    with pytest.raises(DataError, match="unknown emotion 'bored'"):
        load_split(fer_folders, "train")


def test_a_contempt_folder_is_the_eighth_class(fer_folders):
    import cv2

    (fer_folders / "test" / "contempt").mkdir()
    cv2.imwrite(str(fer_folders / "test" / "contempt" / "0.jpg"), np.zeros((48, 48), np.uint8))
    data = load_split(fer_folders, "val")
    assert data.labels.max() == 7 and data.class_counts().tolist() == [2] * 7 + [1]


def test_unreadable_image_is_a_clear_error(fer_folders):
    (fer_folders / "train" / "sad" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg: not a readable image"):
        load_split(fer_folders, "train")


def test_missing_split_is_a_clear_error(fer_folders, tmp_path):
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "train").mkdir()
    with pytest.raises(DataError, match="no folder for split 'val'"):
        load_split(tmp_path / "only", "val")


@pytest.mark.parametrize(
    "row, message",
    [
        ((9, np.zeros(2304, int), "Training"), "outside 0..6"),
        ((1, np.zeros(100, int), "Training"), "100 pixels"),
        ((1, np.full(2304, 256), "Training"), r"bad\.csv:2: unreadable row .*256"),
    ],
)
def test_bad_csv_rows_are_clear_errors(tmp_path, row, message):
    with pytest.raises(DataError, match=message):
        load_csv(write_csv(tmp_path / "bad.csv", [row]), "Training")


def test_csv_without_columns_is_a_clear_error(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="missing column"):
        load_csv(tmp_path / "x.csv")


def test_shared_fer2013_splits(fer2013):
    val = load_split(fer2013, "val")
    assert len(val) == 3589
    assert val.class_counts()[EMOTIONS.index("disgust")] == 56


def test_folder_faces_are_decoded_as_the_server_decodes_uploads(tmp_path):
    from PIL import Image

    from tests.harness import png_16bit_rgba
    from training.data import read_face
    from webapp.vision.imaging import decode_image
    from webapp.vision.preprocess import face_to_input, to_grayscale

    # a crop as a phone saves it: stored on its side, with an EXIF orientation that turns it upright
    stored = np.zeros((48, 64, 3), np.uint8)
    stored[:, :16] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif.tobytes())
    (tmp_path / "deep.png").write_bytes(png_16bit_rgba(64, 64))
    for name in ("phone.jpg", "deep.png"):
        served = face_to_input(to_grayscale(decode_image((tmp_path / name).read_bytes(), 10**8)))
        assert np.array_equal(read_face(tmp_path / name), served), name
    upright = read_face(tmp_path / "phone.jpg")
    assert upright[:8].mean() > 200 and upright[-8:].mean() < 50  # the white band on top, as shown
    # PGM, which the server does not take, still reads for training
    Image.fromarray(stored[:, :, 0]).save(tmp_path / "gray.pgm")
    assert np.array_equal(read_face(tmp_path / "gray.pgm"), face_to_input(stored[:, :, 0]))


def test_kaggle_icml_face_data_csv_with_spaced_headers_and_a_bom_loads(tmp_path):
    # Kaggle's other copy of FER-2013 writes `emotion, Usage, pixels`; spreadsheets add a byte-order mark
    path = tmp_path / "icml_face_data.csv"
    row = " ".join(["7"] * 2304)
    path.write_text(f"\ufeffemotion, Usage, pixels\n3,Training,{row}\n5,PublicTest,{row}\n", encoding="utf-8")
    assert load_split(path, "val").labels.tolist() == [5]


def test_an_archive_given_as_the_csv_is_a_clear_error(tmp_path):
    import gzip

    path = tmp_path / "fer2013.tar.gz"
    path.write_bytes(gzip.compress(b"emotion,pixels,Usage\n"))
    with pytest.raises(DataError, match=r"not a CSV text file.*extract"):
        load_split(path, "train")


def test_hidden_and_tool_folders_beside_the_emotion_folders_are_ignored(fer_folders):
    for root in (fer_folders / "test", fer_folders):
        (root / ".ipynb_checkpoints").mkdir()
        (root / "__MACOSX").mkdir()
    assert len(load_split(fer_folders / "test", "val")) == 14
    assert len(load_split(fer_folders, "val")) == 14


def test_faces_of_a_class_the_model_lacks_are_a_clear_error(fer_folders):
    (fer_folders / "test" / "contempt").mkdir()
    cv2.imwrite(str(fer_folders / "test" / "contempt" / "0.jpg"), np.zeros((48, 48), np.uint8))
    faces = load_split(fer_folders / "test", "val")
    faces.check_classes((*EMOTIONS, "contempt"))
    with pytest.raises(DataError, match="has contempt faces, which the model cannot answer"):
        faces.check_classes(tuple(EMOTIONS))
