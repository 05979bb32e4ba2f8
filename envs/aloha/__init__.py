"""ALOHA bimanual manipulation: state-observation envs, IK, scripted demonstrations."""
