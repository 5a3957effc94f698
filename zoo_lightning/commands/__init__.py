"""The command-line tools beyond LightningCLI's trainer verbs, one module or package each."""
