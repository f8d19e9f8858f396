"""Load-test a server with real test inputs: `targets`, `attack` (a rate sweep), `summarize`.

  python inference/load_testing/run.py targets --server fastapi --url http://127.0.0.1:8000 ...

`--help` lists the subcommands; the code is llmhub/serve/loadtest/.
"""
from llmhub.serve.loadtest.run import main

if __name__ == "__main__":
    main()
