"""LoFi trainer: Synth-TAL, data pipeline, models, fidelity schedule, losses and training stages."""
