# Track Anything ML backend for Label Studio (CPU image; mount checkpoints to enable SAM+XMem).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0 PORT=9090 WORKERS=1 THREADS=16 MODEL_DIR=/data/model_dir LOG_LEVEL=INFO

WORKDIR /app
RUN pip install --upgrade pip \
 && pip install torch==2.14.1 torchvision==0.29.1
COPY requirements.txt constraints.txt ./
RUN pip install -r requirements.txt -c constraints.txt

COPY backend ./backend
COPY model.py _wsgi.py ./
COPY docs/labeling-config.xml ./docs/labeling-config.xml

RUN useradd --create-home tam && mkdir -p /data/model_dir && chown -R tam /data
USER tam
EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,os;urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health', timeout=2)"
CMD gunicorn --bind ${HOST}:${PORT} --workers ${WORKERS} --threads ${THREADS} --timeout 0 _wsgi:app
