import numpy as np
import pytest

from webapp.vision.preprocess import DEFAULT_FRAMING, INPUT_SIZE, crop_box, face_to_input, to_grayscale, to_model_input


def test_model_input_shape_dtype_and_range():
    faces = np.array([np.zeros((48, 48)), np.full((48, 48), 255)], np.uint8)
    x = to_model_input(faces)
    assert x.shape == (2, 48, 48, 1) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0


def test_model_input_refuses_float_faces():
    with pytest.raises(TypeError):
        to_model_input(np.zeros((48, 48), np.float32))


@pytest.mark.parametrize("shape", [(100, 80), (30, 30), (48, 48)])
def test_face_to_input_resizes_any_crop(shape):
    out = face_to_input(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    assert out.shape == (INPUT_SIZE, INPUT_SIZE) and out.dtype == np.uint8


def test_crop_box_is_square_larger_and_centred_on_the_face():
    left, _top, side = crop_box(100, 100, 80, 100)
    assert side == round(100 * DEFAULT_FRAMING.scale)  # scaled from the longer side
    assert abs((left + side / 2) - 140) <= 1


def test_face_at_the_image_edge_is_padded_not_shrunk():
    gray = np.full((100, 100), 200, np.uint8)
    out = face_to_input(gray, (-20, -20, 60, 60))
    assert out.shape == (48, 48)
    assert out.min() == 200  # border replicated, no black bars


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_grayscale_respects_channel_order(order):
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0 if order == "RGB" else 2] = 255
    assert to_grayscale(red, order)[0, 0] == 76  # BT.601 weight of red


def test_grayscale_passes_gray_through_and_rejects_odd_shapes():
    gray = np.zeros((5, 5), np.uint8)
    assert to_grayscale(gray) is gray
    with pytest.raises(ValueError):
        to_grayscale(np.zeros((5, 5, 2), np.uint8))
