# shellcheck shell=bash
# The smoke test users' password, uploaded (SFTP) to PASSWORD_FILE in the ejabberd user's home,
# made readable to that user only: its hidden node reads it from there and deletes it (smoke.py).
# params: PASSWORD_FILE
chown ejabberd:ejabberd "$PASSWORD_FILE" && chmod 400 "$PASSWORD_FILE"
