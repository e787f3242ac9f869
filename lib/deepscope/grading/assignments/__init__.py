"""The check definitions of the book's five assignments, one module per chapter.

Each module defines ``ASSIGNMENT`` (a `deepscope.grading.Assignment`) and imports its chapter's
library: only the grader imports these modules, never the sandbox.
"""
