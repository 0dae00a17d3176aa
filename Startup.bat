@echo off
rem Manifest Syncer on Windows: double-click to run it. With a Redis (one answering on
rem REDIS_URL, or redis-server on PATH) web, worker and beat run each in its own window;
rem without one, everything runs in this window on an embedded server (manage.py dev).
rem Celery refuses -B (embedded beat) on Windows and its prefork pool does not work there,
rem so the worker runs with --pool=solo and beat runs on its own.
setlocal
cd /d "%~dp0"
rem A run on this machine: development settings (admin / dev) unless FLASK_CONFIG is set.
if not defined FLASK_CONFIG set "FLASK_CONFIG=development"

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

".venv\Scripts\python.exe" manage.py check-redis
if not errorlevel 1 goto with_redis
where redis-server >nul 2>nul
if errorlevel 1 goto without_redis
start "Manifest Syncer - Redis" redis-server

:with_redis
if not defined BUNGIE_BASE_URL (
    echo BUNGIE_BASE_URL is not set: starting the local demo origin in place of Bungie.
    start "Manifest Syncer - demo origin" ".venv\Scripts\python.exe" manage.py demo-origin
)
start "Manifest Syncer - worker" ".venv\Scripts\python.exe" -m celery -A celery_worker.celery worker --pool=solo --loglevel=INFO
start "Manifest Syncer - beat" ".venv\Scripts\python.exe" -m celery -A celery_worker.celery beat --loglevel=INFO
start "Manifest Syncer - web" ".venv\Scripts\python.exe" -m flask --app app:create_app run
echo Manifest Syncer is starting: open http://127.0.0.1:5000/ (sign in: admin / dev)
goto done

:without_redis
echo.
echo No Redis here: nothing answers on REDIS_URL and redis-server is not on PATH.
echo Running everything in this window on an embedded server instead: manage.py dev.
echo Its data is not kept. For a lasting Redis: docker run -p 6379:6379 redis:7, or WSL.
echo Press Ctrl+C to stop.
echo.
".venv\Scripts\python.exe" manage.py dev
if errorlevel 1 pause

:done
endlocal
