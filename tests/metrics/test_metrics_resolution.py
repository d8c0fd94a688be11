"""MSF resolvability: golden radial sums and cut-offs, and images with a known spectral cut-off."""

import json

import numpy as np
import pytest
from PIL import Image

from locscope.metrics.resolution import msf, msf_resolution_nm, power_spectrum, radial_sum


def _lowpass_image(n, cutoff, seed):
    """Noise whose spectrum is non-zero exactly in the radial bins 0 .. cutoff - 1 (plus a positive offset)."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.fftshift(np.fft.fft2(rng.normal(size=(n, n))))
    rows, cols = np.indices((n, n))
    keep = np.floor(np.hypot(rows - n // 2, cols - n // 2)) < cutoff
    # Hermitian symmetry of the kept set is preserved except on the unpaired Nyquist row/column, which is excluded
    # because cutoff < n // 2; take the real part to drop round-off.
    image = np.real(np.fft.ifft2(np.fft.ifftshift(spectrum * keep)))
    return 10.0 + image / image.std()


def test_radial_sum_hand_computed():
    np.testing.assert_array_equal(radial_sum(np.ones((4, 4))), [1.0, 8.0])
    image = np.zeros((6, 6))
    image[3, 3] = 5.0      # centre -> bin 0
    image[3, 5] = 2.0      # distance 2 -> bin 2
    image[5, 5] = 7.0      # distance 2.83 -> bin 2
    image[0, 0] = 100.0    # distance 4.24 -> beyond N // 2 bins
    np.testing.assert_array_equal(radial_sum(image), [5.0, 0.0, 9.0])


@pytest.mark.parametrize("cutoff", [5, 12, 20])
def test_known_spectral_cutoff(cutoff):
    n = 64
    image = _lowpass_image(n, cutoff, seed=cutoff)
    result = msf(image, pixel_size_nm=100.0)
    assert np.all(result.radial_sum[:cutoff] > 1e-3)
    assert np.all(result.radial_sum[cutoff:] < 1e-12)
    assert result.cutoff_bin == cutoff
    assert result.resolution_nm == pytest.approx(n * 100.0 / cutoff)


def test_white_noise_saturates_at_two_pixels_and_constant_image():
    noise = np.random.default_rng(0).random((3, 32, 32))
    np.testing.assert_allclose(msf_resolution_nm(noise, pixel_size_nm=320.0), 640.0)
    # a constant image has all power at zero frequency: bin 1 is already empty
    assert msf(np.ones((32, 32)), 320.0).cutoff_bin == 1
    assert np.isnan(msf(np.zeros((32, 32)), 320.0).resolution_nm)
    with pytest.raises(ValueError, match="square"):
        msf(np.ones((8, 16)), 320.0)
    with pytest.raises(ValueError, match="pixel_size_nm"):
        msf(np.ones((8, 8)), 0.0)


def test_power_spectrum_is_normalised():
    image = np.random.default_rng(1).random((16, 16))
    spectrum = power_spectrum(image * 37.0)
    assert spectrum[8, 8] == pytest.approx(1000.0**2 / 16**2)   # DC = total intensity 1000, squared / N^2
    np.testing.assert_allclose(spectrum, power_spectrum(image))   # scale-free


def test_msf_reproduces_golden_arrays(shared_golden):
    folder = shared_golden / "metrics"
    expected = json.loads((folder / "expected.json").read_text())
    for name, ref in expected["msf_on_arrays"].items():
        result = msf(np.load(folder / name), ref["pixel_size_nm"])
        golden_sums = np.load(folder / ref["radial_sum"])
        np.testing.assert_allclose(result.radial_sum, golden_sums, rtol=1e-10, atol=1e-13)
        assert result.cutoff_bin == ref["cutoff_bin"], name            # 52, 35, 57
        assert result.resolution_nm == pytest.approx(ref["msf_nm"], rel=1e-12), name   # 1014.15, 1506.74, 1437.19


def test_msf_reproduces_golden_pngs(shared_data, shared_golden):
    expected = json.loads((shared_golden / "metrics" / "expected.json").read_text())
    for rel, ref in expected["msf_on_png"].items():
        image = np.asarray(Image.open(shared_data / "celldiff_samples" / rel).convert("L"), dtype=np.float64) / 255
        result = msf(image, ref["pixel_size_nm"])
        assert result.cutoff_bin == ref["cutoff_bin"], rel
        assert result.resolution_nm == pytest.approx(ref["msf_nm"]), rel   # 640 nm (HPA), 412 nm (OpenCell)
