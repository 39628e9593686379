"""Device-safe runtime: numpy, OpenCV and a TFLite interpreter only. Never imports TensorFlow (the
interpreter module falls back to tf.lite only when neither ai-edge-litert nor tflite-runtime is installed).

preprocess (the one image contract), formats (image suffixes, the DICOM check), errors, text + vocab (the
one text contract), decoding (greedy / beam over a step protocol), study (a study's views -> attention
memory), manifest + bundle + interpreter (a bundle read through its manifest), captioner + report
(image -> Report), dicom, sanity (not-a-chest-X-ray checks). Training, conversion, bench, app, API and
CLI all import these; the runtime imports none of them.
"""
