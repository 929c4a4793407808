"""The fused trainer: rollout, update and the TrainState, compiled as one program; where seeds run (devices, processes)."""
