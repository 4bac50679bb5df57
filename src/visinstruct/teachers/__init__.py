"""Teachers: models that turn a chat request into a reply."""

from .base import Reply, Teacher, TeacherError

__all__ = ["Reply", "Teacher", "TeacherError"]
