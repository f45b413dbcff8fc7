# Pangolin Gateway container image. Build: docker build -t pangolin-gateway .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PANGOLIN_CONFIG=/etc/pangolin/gateway.toml

WORKDIR /opt/pangolin
COPY constraints.txt setup.cfg pyproject.toml README.md ./
COPY gateway ./gateway
COPY admin_cli ./admin_cli
RUN pip install --disable-pip-version-check -c constraints.txt ".[fast]" \
    && useradd --system --uid 10001 --home-dir /var/lib/pangolin pangolin \
    && mkdir -p /var/lib/pangolin /etc/pangolin \
    && chown pangolin /var/lib/pangolin
COPY config/gateway.docker.toml /etc/pangolin/gateway.toml

USER pangolin
VOLUME ["/var/lib/pangolin"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
# init is idempotent: on the first start it creates the store and prints the Root key once
# (docker compose logs gateway); afterwards it changes nothing.
CMD ["sh", "-c", "pangolin-gateway init && exec pangolin-gateway serve"]
