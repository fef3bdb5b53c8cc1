"""The training engine: settings and recipes (`settings`, `recipes`, `config`), the loop (`trainer.train`), a run's
parts and state (`run`, `state`), checkpoints (`checkpoint`), the run folder's summary (`summary`) and callbacks.
What is trained (data, model, loss, scoring) comes from a `lstmvision.tasks.Task`."""
