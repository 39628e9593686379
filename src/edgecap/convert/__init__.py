"""Run directory -> TFLite bundle (encoder + decoder step + vocab + manifest). Needs TensorFlow.

modes        the one table of modes: flag, file suffix, precision per part, thresholds, tflite-runtime 2.14
sources      real images: the run's data, an IU X-Ray folder, a folder of images, the packaged sample
calibration  int8 data: real + augmented images, decoder steps recorded during Keras decoding
export       Keras export views -> .tflite bytes (builtin ops only)
flatbuffer   operator list of a .tflite file (stored in the manifest)
bundle_writer  files + runtime.manifest.Manifest
verify       bundle vs Keras, stage by stage, on real images
pipeline     all of the above for one mode: convert_run()
cli          the `edgecap convert` command
"""
