"""Flask-free vision core: face detection, preprocessing, emotion classification.

Training imports `labels` and `preprocess` from here so that the model sees exactly
what the server feeds it. Heavy modules (TensorFlow, LiteRT) load lazily.
"""
