"""The synthetic world: a generative model of careers, its exact oracle, the synth command."""
