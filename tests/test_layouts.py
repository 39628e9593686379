"""The three IU X-Ray layouts, built from the real shared files, give the same study (uid 1000)."""

import tarfile
from pathlib import Path

import pytest

from edgecap.data import iu_xray
from edgecap.data.splits import assign_random_split, studies_in
from edgecap.data.stats import compute_stats


def _link(dst: Path, src: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)


@pytest.fixture(scope="module")
def layouts(iu_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    _link(root / "openi" / "NLMCXR_reports.tgz", iu_data / "NLMCXR_reports.tgz")
    _link(root / "openi" / "NLMCXR_png", iu_data / "images")
    _link(root / "kaggle" / "indiana_reports.csv", iu_data / "indiana_reports.csv")
    _link(root / "kaggle" / "indiana_projections.csv", iu_data / "indiana_projections.csv")
    _link(root / "kaggle" / "images" / "images_normalized", iu_data / "images_kaggle")
    _link(root / "r2gen" / "annotation.json", iu_data / "annotation_r2gen_layout.json")
    _link(root / "r2gen" / "images", iu_data / "images")
    # Open-i with the archive unpacked
    with tarfile.open(iu_data / "NLMCXR_reports.tgz") as tar:
        tar.extractall(root / "openi_xml", filter="data")
    _link(root / "openi_xml" / "png", iu_data / "images")
    return root


def test_detect(layouts):
    assert iu_xray.detect_layout(layouts / "openi") == "openi"
    assert iu_xray.detect_layout(layouts / "openi_xml") == "openi"
    assert iu_xray.detect_layout(layouts / "kaggle") == "kaggle"
    assert iu_xray.detect_layout(layouts / "r2gen") == "r2gen"


def test_uid_1000_same_in_every_layout(layouts):
    openi = iu_xray.load(layouts / "openi").by_uid()["1000"]
    xml = iu_xray.load(layouts / "openi_xml").by_uid()["1000"]
    kaggle = iu_xray.load(layouts / "kaggle").by_uid()["1000"]
    r2gen = iu_xray.load(layouts / "r2gen").by_uid()["1000"]
    meta = lambda s: [(im.key, im.projection) for im in s.images]  # noqa: E731
    expected = [("1000_IM-0003-1001", "frontal"), ("1000_IM-0003-2001", "lateral"), ("1000_IM-0003-3001", "frontal")]
    for s in (openi, xml, kaggle, r2gen):
        assert meta(s) == expected
    for s in (xml, kaggle):
        assert (s.findings, s.impression, s.mesh) == (openi.findings, openi.impression, openi.mesh)
    assert openi.findings.startswith("There is XXXX increased opacity within the right upper lobe")
    # the R2Gen file holds one report string: here findings + impression
    assert r2gen.text("findings") == openi.text("findings+impression")
    # images: the Open-i folder has the 512 px lateral, the Kaggle folder all three full-resolution views
    assert [im.path is not None for im in openi.images] == [False, True, False]
    assert all(im.path is not None for im in kaggle.images)
    assert openi.views()[1].path.name == "CXR1000_IM-0003-2001.png"
    assert kaggle.views()[0].path.name == "1000_IM-0003-1001.dcm.png"
    assert kaggle.views()[1].path.name == "1000_IM-0003-2001.dcm.png"


def test_counts_per_layout(layouts):
    assert len(iu_xray.load(layouts / "openi").studies) == 3955
    assert len(iu_xray.load(layouts / "kaggle").studies) == 3851
    r2 = iu_xray.load(layouts / "r2gen")
    assert len(r2.studies) == 3826
    assert {s: len(studies_in(r2, s)) for s in ("train", "val", "test")} == {"train": 3062, "val": 382, "test": 382}


def test_annotation_split_applies_to_openi(iu_data):
    ds = iu_xray.load(iu_data)
    assert ds.layout == "openi" and ds.split_source.startswith("annotation:")
    assert ds.by_uid()["1000"].split == "train"


def test_random_split_is_by_study_and_seeded(iu_data):
    a, b = iu_xray.load(iu_data, annotation=None), iu_xray.load(iu_data, annotation=None)
    assign_random_split(a, 7, 0.1, 0.2)
    assign_random_split(b, 7, 0.1, 0.2)
    assert [s.split for s in a.studies] == [s.split for s in b.studies]
    assign_random_split(b, 8, 0.1, 0.2)
    assert [s.split for s in a.studies] != [s.split for s in b.studies]
    n = {k: len(studies_in(a, k)) for k in ("train", "val", "test")}
    assert n == {"train": 2768, "val": 396, "test": 791}


def test_missing_and_unreadable_images_counted(layouts, tmp_path, iu_data):
    root = tmp_path / "openi"
    _link(root / "NLMCXR_reports.tgz", iu_data / "NLMCXR_reports.tgz")
    (root / "png").mkdir()
    (root / "png" / "CXR54_IM-2145-1001.png").write_bytes(
        (iu_data / "images" / "CXR54_IM-2145-1001.png").read_bytes()[:5000]
    )
    (root / "png" / "CXR25_IM-1024-2001.png").write_bytes((iu_data / "images" / "CXR25_IM-1024-2001.png").read_bytes())
    st = compute_stats(iu_xray.load(root))
    assert st.images_listed == 7470 and st.images_found == 1 and len(st.images_unreadable) == 1
    assert st.images_missing == 7468
    assert "CXR54_IM-2145-1001.png" in st.images_unreadable[0]


def test_not_a_layout(tmp_path):
    with pytest.raises(iu_xray.DataError, match="no IU X-Ray layout"):
        iu_xray.load(tmp_path)
    with pytest.raises(iu_xray.DataError, match="no such file"):
        iu_xray.load(tmp_path / "nope")


def test_corrupt_xml_is_listed_not_fatal(tmp_path, iu_data):
    (tmp_path / "ecgen-radiology").mkdir()
    (tmp_path / "ecgen-radiology" / "1.xml").write_text("<eCitation><broken")
    with tarfile.open(iu_data / "NLMCXR_reports.tgz") as tar:
        member = tar.getmember("ecgen-radiology/1000.xml")
        (tmp_path / "ecgen-radiology" / "1000.xml").write_bytes(tar.extractfile(member).read())
    ds = iu_xray.load(tmp_path)
    assert [s.uid for s in ds.studies] == ["1000"] and len(ds.unreadable) == 1


@pytest.mark.parametrize(
    "name, key",
    [
        ("CXR1000_IM-0003-2001.png", "1000_IM-0003-2001"),  # Open-i file
        ("CXR1000_IM-0003-2001", "1000_IM-0003-2001"),  # Open-i XML id
        ("1000_IM-0003-2001.dcm.png", "1000_IM-0003-2001"),  # Kaggle file
        ("CXR1_1_IM-0001-3001.png", "1_IM-0001-3001"),  # uid 1 repeats its uid in Open-i only
        ("CXR11_IM-0067-1001.png", "11_IM-0067-1001"),
        ("CXR3809_IM-1919-1003002", "3809_IM-1919-1003002"),
        ("notes.png", None),
    ],
)
def test_image_key(name, key):
    assert iu_xray.image_key(name) == key


def test_every_openi_image_has_a_projection_but_four(iu_data):
    """The packaged Kaggle table names the projection of all but 4 of the 7,470 Open-i images."""
    ds = iu_xray.load(iu_data)
    unknown = [im.key for s in ds.studies for im in s.images if im.projection == "unknown"]
    assert sorted(unknown) == [
        "2084_IM-0715-1001-0002",
        "2084_IM-0715-2001-0001",
        "2560_IM-1064-4001",
        "3809_IM-1919-1003002",
    ]
