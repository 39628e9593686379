"""Device-safe runtime: numpy, OpenCV and a TFLite interpreter only. Never imports TensorFlow.

preprocess (the one image contract), text + vocab (the one text contract), decoding (greedy / beam over
a step protocol). Training, conversion, bench, app and API all import these.
"""
