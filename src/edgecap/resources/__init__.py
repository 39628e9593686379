"""Package data: the real IU X-Ray sample (see iu_xray_sample/ATTRIBUTION.md) and the projection table."""

from importlib import resources
from pathlib import Path


def sample_dir() -> Path:
    """The bundled real IU X-Ray sample, an Open-i layout folder (reports archive + 11 PNGs)."""
    return Path(str(resources.files("edgecap.resources").joinpath("iu_xray_sample")))


def sample_image() -> Path:
    """A real frontal chest X-ray from the sample (uid 25, CC BY-NC-ND 4.0, Indiana University / Open-i)."""
    return sample_dir() / "images" / "CXR25_IM-1024-2001.png"
