"""Studies, series, instances and frames from the console, checked against values
computed here from the pixels each test sent through a real node."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from typer.testing import CliRunner

from deid_node.config import Config
from deid_node.runtime.node import Node
from deid_node.testing.synthetic.patient import new_dataset
from deid_node.web.app import create_app
from tests.support.node import CT_SOURCE, console_user, node_table
from tests.support.scu import store

runner = CliRunner()
PASSWORD = "a long enough password"
STUDY = generate_uid()
CONFIG = (
    node_table()
    + CT_SOURCE
    + """burned_in_annotation = "allow"
keep = ["SeriesDescription"]  # the tests find their series by it
"""
)
RNG = np.random.default_rng(7)


def image(**attrs: object) -> Dataset:
    """A minimal image of one study: the test's own attributes and pixels."""
    ds = new_dataset(CTImageStorage, generate_uid())
    ds.PatientID = "VIEWER-1"
    ds.PatientName = "VIEWER^TEST"
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.InstanceNumber = 1
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def grey(photometric: str, pixels: np.ndarray, **attrs: object) -> Dataset:
    rows, cols = pixels.shape
    ds = image(
        Rows=rows, Columns=cols, SamplesPerPixel=1, PhotometricInterpretation=photometric,
        BitsAllocated=16, BitsStored=12, HighBit=11, PixelRepresentation=0, **attrs,
    )  # fmt: skip
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


CT_PIXELS = RNG.integers(0, 4096, size=(16, 20), dtype=np.uint16)
M1_PIXELS = RNG.integers(0, 4096, size=(8, 8), dtype=np.uint16)
RGB_FRAMES = RNG.integers(0, 256, size=(2, 6, 5, 3), dtype=np.uint8)
INDICES = RNG.integers(0, 4, size=(6, 7), dtype=np.uint8)
LUT = np.array(
    [[0, 65535, 0, 13107], [0, 0, 65535, 26214], [65535, 0, 0, 39321]], dtype=np.uint16
)  # red, green, blue entries of a 4-entry 16-bit palette
YBR = np.array(
    [[[128, 128, 128], [200, 90, 160]], [[60, 150, 100], [255, 128, 128]]], dtype=np.uint8
)


def datasets() -> dict[str, Dataset]:
    ct = grey(
        "MONOCHROME2", CT_PIXELS, RescaleSlope=2, RescaleIntercept=-1024,
        WindowCenter=[40, 300], WindowWidth=[400, 1500], SeriesDescription="CT rescaled",
    )  # fmt: skip
    m1 = grey("MONOCHROME1", M1_PIXELS, SeriesDescription="mono1")
    rgb = image(
        Rows=6, Columns=5, SamplesPerPixel=3, PhotometricInterpretation="RGB",
        PlanarConfiguration=1, BitsAllocated=8, BitsStored=8, HighBit=7,
        PixelRepresentation=0, NumberOfFrames=2, SeriesDescription="rgb planar",
    )  # fmt: skip
    rgb.PixelData = b"".join(f.transpose(2, 0, 1).tobytes() for f in RGB_FRAMES)  # planes
    pal = image(
        Rows=6, Columns=7, SamplesPerPixel=1, PhotometricInterpretation="PALETTE COLOR",
        BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0,
        SeriesDescription="palette",
    )  # fmt: skip
    for colour, row in zip(("Red", "Green", "Blue"), LUT, strict=True):
        setattr(pal, f"{colour}PaletteColorLookupTableDescriptor", [4, 0, 16])
        setattr(pal, f"{colour}PaletteColorLookupTableData", row.tobytes())
    pal.PixelData = INDICES.tobytes()
    ybr = image(
        Rows=2, Columns=2, SamplesPerPixel=3, PhotometricInterpretation="YBR_FULL",
        PlanarConfiguration=0, BitsAllocated=8, BitsStored=8, HighBit=7,
        PixelRepresentation=0, SeriesDescription="ybr",
    )  # fmt: skip
    ybr.PixelData = YBR.tobytes()
    return {"ct": ct, "m1": m1, "rgb": rgb, "pal": pal, "ybr": ybr}


@pytest.fixture(scope="module")
def console(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A node that stored the five images; a logged-in client; description -> series."""
    from deid_node.config import load_config

    folder = tmp_path_factory.mktemp("viewer")
    (folder / "deid-node.toml").write_text(CONFIG, encoding="utf-8")
    cfg: Config = load_config(folder / "deid-node.toml")
    node = Node(cfg, port=0)
    node.start()
    try:
        sent = list(datasets().values())
        assert store(node.address, sent, "CT_SCANNER") == [0] * len(sent)
        assert node.wait_idle(60)
    finally:
        node.stop(timeout=60)
    token = console_user(cfg, "viewer", PASSWORD)
    with TestClient(create_app(cfg), base_url="http://127.0.0.1") as client:
        client.headers["Authorization"] = f"Bearer {token}"
        [study] = client.get("/api/studies").json()
        series = client.get(f"/api/studies/{study['pseudo_study_uid']}/series").json()
        yield client, {s["series_description"]: s["pseudo_series_uid"] for s in series}


def frame(
    console: tuple[TestClient, dict[str, str]], name: str, index: int = 0, query: str = ""
) -> np.ndarray:
    client, series = console
    [instance] = client.get(f"/api/series/{series[name]}/instances").json()
    response = client.get(f"/api/instances/{instance['pseudo_sop_uid']}/frames/{index}.png{query}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out again here."""
    out = np.empty(x.shape)
    for i, v in np.ndenumerate(x.astype(float)):
        if v <= c - 0.5 - (w - 1) / 2:
            out[i] = 0
        elif v > c - 0.5 + (w - 1) / 2:
            out[i] = 255
        else:
            out[i] = ((v - (c - 0.5)) / (w - 1) + 0.5) * 255
    return np.rint(out)


def test_studies_series_and_instances(console: tuple[TestClient, dict[str, str]]) -> None:
    client, series = console
    [study] = client.get("/api/studies").json()
    assert study["instances"] == 5 and study["modalities"] == ["CT"]
    assert study["pseudo_study_uid"] != STUDY and study["pseudo_patient_id"] != "VIEWER-1"
    assert set(series) == {"CT rescaled", "mono1", "rgb planar", "palette", "ybr"}
    [rgb] = client.get(f"/api/series/{series['rgb planar']}/instances").json()
    assert (rgb["frames"], rgb["rows"], rgb["columns"]) == (2, 6, 5)
    assert rgb["photometric_interpretation"] == "RGB"
    assert client.get("/api/series/1.2.3/instances").status_code == 404


def test_ct_with_rescale_and_a_window(console: tuple[TestClient, dict[str, str]]) -> None:
    hu = CT_PIXELS.astype(float) * 2 - 1024
    assert np.array_equal(frame(console, "CT rescaled"), linear(hu, 40, 400))  # file's first
    asked = frame(console, "CT rescaled", query="?window_center=300&window_width=1500")
    assert np.array_equal(asked, linear(hu, 300, 1500))


def test_monochrome1_is_inverted_over_the_full_range(
    console: tuple[TestClient, dict[str, str]],
) -> None:
    x = M1_PIXELS.astype(float)
    expected = 255 - np.rint((x - x.min()) * 255 / (x.max() - x.min()))
    got = frame(console, "mono1").astype(float)
    assert np.abs(got - expected).max() <= 1  # rounding of the inversion


def test_rgb_multiframe_with_planar_configuration_1(
    console: tuple[TestClient, dict[str, str]],
) -> None:
    for index in (0, 1):
        assert np.array_equal(frame(console, "rgb planar", index), RGB_FRAMES[index])
    client, series = console
    [rgb] = client.get(f"/api/series/{series['rgb planar']}/instances").json()
    assert client.get(f"/api/instances/{rgb['pseudo_sop_uid']}/frames/2.png").status_code == 404


def test_palette_colour_as_rgb(console: tuple[TestClient, dict[str, str]]) -> None:
    expected = np.rint(LUT.T[INDICES].astype(float) * 255 / 65535)
    assert np.array_equal(frame(console, "palette"), expected)


def test_ybr_full_as_rgb(console: tuple[TestClient, dict[str, str]]) -> None:
    y, cb, cr = (YBR[..., i].astype(float) for i in range(3))
    expected = np.stack(
        [
            y + 1.402 * (cr - 128),
            y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
            y + 1.772 * (cb - 128),
        ],
        axis=-1,
    )
    got = frame(console, "ybr").astype(float)
    assert np.abs(got - np.clip(expected, 0, 255)).max() <= 1.5


def test_the_header_is_the_de_identified_one(console: tuple[TestClient, dict[str, str]]) -> None:
    client, series = console
    [ct] = client.get(f"/api/series/{series['CT rescaled']}/instances").json()
    rows = client.get(f"/api/instances/{ct['pseudo_sop_uid']}/header").json()
    values = {r["keyword"].strip(): r["value"] for r in rows}
    assert values["PatientIdentityRemoved"] == "YES"
    assert "VIEWER" not in " ".join(values.values())
    assert values["SOPInstanceUID"] == ct["pseudo_sop_uid"]


def test_pages_need_a_session_and_show_the_study(
    console: tuple[TestClient, dict[str, str]],
) -> None:
    import re

    client, series = console
    anonymous = TestClient(client.app, base_url="http://127.0.0.1")
    assert anonymous.get("/api/studies").status_code == 401
    assert anonymous.get(f"/viewer/{series['ybr']}", follow_redirects=False).status_code == 303
    page = anonymous.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token
    form = {"username": "viewer", "password": PASSWORD, "csrf": token.group(1)}
    assert anonymous.post("/login", data=form, follow_redirects=False).status_code == 303
    studies = anonymous.get("/studies")
    assert studies.status_code == 200 and "CT" in studies.text
    study = re.search(r'href="/studies/([0-9.]+)"', studies.text)
    assert study
    listing = anonymous.get(f"/studies/{study.group(1)}")
    assert listing.status_code == 200 and listing.text.count('href="/viewer/') == 10
    viewer = anonymous.get(f"/viewer/{series['rgb planar']}")
    assert viewer.status_code == 200
    assert 'id="frame"' in viewer.text and 'id="play"' in viewer.text  # multi-frame
    assert "PatientIdentityRemoved" in viewer.text
