"""The report package: PNG encoding and the pictures pipelines write."""

import io

import numpy as np
from PIL import Image

from locscope.report.images import landmark_composite, png_bytes, protein_png, to_uint8, write_png


def test_png_bytes_round_trip_and_upscaling(tmp_path):
    image = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    assert to_uint8(image).tolist() == [[0, 128], [255, 64]]
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(image, scale=3))))
    assert decoded.shape == (6, 6) and decoded[:3, 3:].tolist() == [[128] * 3] * 3
    rgb = landmark_composite(np.stack([image, 1 - image]), ("nucleus", "microtubules"))
    path = write_png(tmp_path / "rgb.png", rgb)
    assert np.asarray(Image.open(path)).tolist() == to_uint8(rgb).tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["rgb.png"]   # nothing else left behind


def test_protein_png_is_green_over_blue_nucleus():
    protein = np.zeros((16, 16), np.float32)
    protein[4, 4] = 2.0
    picture = np.asarray(Image.open(io.BytesIO(protein_png(protein, np.ones((16, 16), np.float32)))))
    assert picture.shape == (160, 160, 3)                      # upscaled 10 x for viewing
    assert picture[40, 40].tolist() == [0, 255, 153] and picture[0, 0].tolist() == [0, 0, 153]


def test_tiff_writer_keeps_dtype_and_unit_images_span_uint16(tmp_path):
    import tifffile

    from locscope.report.images import unit_to_uint16, write_tiff

    assert unit_to_uint16(np.array([-0.5, 0.0, 0.5, 1.0, 2.0])).tolist() == [0, 0, 32768, 65535, 65535]
    raw = np.array([[-1.25, 0.5], [3.0, 0.0]], np.float32)
    path = write_tiff(tmp_path / "raw.tif", raw)
    read = tifffile.imread(path)
    assert read.dtype == np.float32 and np.array_equal(read, raw)
    assert [p.name for p in tmp_path.iterdir()] == ["raw.tif"]


def test_html_page_escapes_the_title_and_appends_page_rules():
    import base64

    from locscope.report.html import STYLE, html_page, png_img

    page = html_page("a <b> & c", "<h1>x</h1>", style="td{color:red}")
    assert page.startswith('<!doctype html><html><head><meta charset="utf-8"><title>a &lt;b&gt; &amp; c</title>')
    assert f"<style>{STYLE} td{{color:red}}</style>" in page and page.endswith("<h1>x</h1>\n</body></html>\n")
    encoded = base64.b64encode(b"PNG bytes").decode()
    assert png_img(b"PNG bytes", 'a "b"') == f'<img title="a &quot;b&quot;" src="data:image/png;base64,{encoded}">'
    assert png_img(b"PNG bytes") == f'<img src="data:image/png;base64,{encoded}">'
