# Thin wrappers over book.py, which does the set-up itself (see README.md).
PYTHON ?= python3

.PHONY: lab book test
lab:
	$(PYTHON) book.py lab
book:
	$(PYTHON) book.py lab --headless
test:
	$(PYTHON) book.py test
