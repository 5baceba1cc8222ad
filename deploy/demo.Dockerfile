# The demo staging stack (gateway, Authorizer stand-in, database host exporter, load) as
# one container: the project's pinned requirements, the code mounted at /opt/soak by
# docker-compose.yaml. It runs `python -m deploy.staging_stack up ...` = `python -m
# demo.stack up ...` against the staging-db service.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/opt/soak
WORKDIR /opt/soak
COPY requirements.txt constraints.txt /tmp/soak/
RUN pip install --no-cache-dir -r /tmp/soak/requirements.txt -c /tmp/soak/constraints.txt
