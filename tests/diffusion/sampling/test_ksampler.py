"""Seeds, schedules with denoise, step slicing: the facts docs/architecture.md §7 fixes."""
import torch

from diffusion.sampling.ksampler import calculate_sigmas, prepare_noise, slice_sigmas


class FakeModel:
    """Only what the schedule needs: the discrete SD model sampling."""

    def __init__(self):
        from diffusion.sampling.model_sampling import DiscreteModelSampling
        self.model_sampling = DiscreteModelSampling()


def test_noise_is_cpu_float32_randn_of_the_whole_shape_from_the_seed():
    latent = torch.zeros(2, 4, 8, 8)
    torch.manual_seed(1234)
    expected = torch.randn(2, 4, 8, 8)
    assert torch.equal(prepare_noise(latent, 1234), expected)
    assert prepare_noise(latent, 1234).dtype == torch.float32
    assert not torch.equal(prepare_noise(latent, 1235), expected)
    assert torch.equal(prepare_noise(latent, 2 ** 64 - 1), prepare_noise(latent, 2 ** 64 - 1))


def test_batch_index_picks_per_index_draws():
    latent = torch.zeros(2, 4, 8, 8)
    torch.manual_seed(9)
    draws = [torch.randn(1, 4, 8, 8) for _ in range(4)]
    picked = prepare_noise(latent, 9, batch_index=[3, 1])
    assert torch.equal(picked[0:1], draws[3]) and torch.equal(picked[1:2], draws[1])


def test_first_images_of_a_batch_do_not_depend_on_batch_size():
    small = prepare_noise(torch.zeros(1, 4, 8, 8), 5)
    large = prepare_noise(torch.zeros(3, 4, 8, 8), 5)
    assert torch.equal(small[0], large[0])


def test_denoise_keeps_the_tail_of_a_longer_schedule():
    model = FakeModel()
    full = calculate_sigmas(model, "normal", 20)
    assert len(full) == 21 and full[-1] == 0
    half = calculate_sigmas(model, "normal", 10, denoise=0.5)
    assert len(half) == 11 and torch.allclose(half, calculate_sigmas(model, "normal", 20)[-11:])
    assert len(calculate_sigmas(model, "karras", 10, denoise=0.0)) == 0


def test_step_slicing_for_advanced_samplers():
    sigmas = torch.linspace(10, 0, 11)
    first = slice_sigmas(sigmas, 0, 6, force_full_denoise=False)
    assert len(first) == 7 and first[-1] == sigmas[6]
    forced = slice_sigmas(sigmas, 0, 6, force_full_denoise=True)
    assert forced[-1] == 0 and sigmas[6] != 0  # the input is not modified
    rest = slice_sigmas(sigmas, 6, 10000, force_full_denoise=True)
    assert torch.equal(rest, sigmas[6:])
    assert len(slice_sigmas(sigmas, 10, None, False)) == 0
