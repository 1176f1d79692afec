//! kinglet-tools: the library behind the `kinglet` command.
