@echo off
rem Manifest Syncer on Windows: double-click to run web, worker and beat, each in its own window.
rem Celery refuses -B (embedded beat) on Windows and its prefork pool does not work there,
rem so the worker runs with --pool=solo and beat runs on its own.
setlocal
cd /d "%~dp0"

if not exist ".venv\Scripts\python.exe" (
    echo Creating .venv and installing Manifest Syncer...
    py -3 -m venv .venv 2>nul || python -m venv .venv
    if errorlevel 1 (
        echo Python 3.11 or newer is needed: install it from python.org, then run this again.
        pause
        exit /b 1
    )
    ".venv\Scripts\python.exe" -m pip install --upgrade pip
    ".venv\Scripts\python.exe" -m pip install -e .
)

where redis-server >nul 2>nul
if errorlevel 1 (
    echo.
    echo Redis is not installed here. Start one, then run this again:
    echo   - with Docker:  docker run -p 6379:6379 redis:7
    echo   - with WSL:     sudo apt install redis-server ^&^& redis-server
    echo Or run everything without Redis:  .venv\Scripts\python.exe manage.py dev
    echo.
) else (
    start "Manifest Syncer - Redis" redis-server
)

if not defined BUNGIE_BASE_URL (
    echo BUNGIE_BASE_URL is not set: starting the local demo origin in place of Bungie.
    start "Manifest Syncer - demo origin" ".venv\Scripts\python.exe" manage.py demo-origin
)

start "Manifest Syncer - worker" ".venv\Scripts\python.exe" -m celery -A celery_worker.celery worker --pool=solo --loglevel=INFO
start "Manifest Syncer - beat" ".venv\Scripts\python.exe" -m celery -A celery_worker.celery beat --loglevel=INFO
start "Manifest Syncer - web" ".venv\Scripts\python.exe" -m flask --app app:create_app run

echo Manifest Syncer is starting: open http://127.0.0.1:5000/ (sign in: admin / dev)
endlocal
