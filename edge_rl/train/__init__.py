"""Training side, the only place torch is imported: DQN, distillation, IR conversion.

Import the pieces from their modules (`edge_rl.train.dqn.train_dqn`, `edge_rl.train.config`);
this package's own import stays torch-free so the CLI can read settings without loading torch.
"""
