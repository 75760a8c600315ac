"""Tests for diffusion.sampling: schedules, model sampling, noise and samplers."""
