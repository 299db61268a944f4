# `seedbed serve` in a container: the OpenAI-compatible server with the torch and llama.cpp engines, and nothing
# of curation, training or plotting (the [serve] and [llamacpp] extras only).
#
#   docker build -t seedbed-serve .
#   docker run -p 8000:8000 -v $PWD/runs:/models seedbed-serve --model tuned=/models/demo-q4 --engine llama.cpp
#
# Any `seedbed serve` flag follows the image name; --host and --port are set here so the port can be published.

FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
# Every wheel the server needs, built here once: llama-cpp-python from source with GGML_NATIVE=OFF (a portable
# CPU baseline; a native build can die with "Illegal instruction" on another CPU), torch's CPU build (no CUDA
# libraries: about 2 GB smaller), the rest at the versions CI tested (constraints.txt).
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF"
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt \
        --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" ".[serve,llamacpp]"

FROM python:3.11-slim-bookworm
# libgomp: llama.cpp's OpenMP threads (torch bundles its own)
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "seedbed[serve,llamacpp]" && rm -rf /wheels
RUN useradd --create-home seedbed
USER seedbed
ENV SEEDBED_HOME=/home/seedbed/.cache/seedbed
EXPOSE 8000
ENTRYPOINT ["seedbed", "serve", "--host", "0.0.0.0", "--port", "8000"]
