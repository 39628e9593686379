"""edgecap: offline chest X-ray report generation on edge devices.

Two flows (see README):
  inference  image -> runtime.preprocess -> encoder -> features -> runtime.decoding (step loop) -> vocab -> report
  lifecycle  data -> training -> run directory -> convert -> bundle -> runtime -> CLI / app / API / bench
"""

__version__ = "0.1.0"
