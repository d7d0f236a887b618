"""The 32 academic events: eight entities x created/read/updated/deleted.

Subjects are ``academic.<entity>.<action>`` exactly as the product description lists them.
Each entity's events name their aggregate's identity in ``partition_key_field``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from outbox_client.events.base import (
    BaseEvent,
    Code,
    DeletedEvent,
    ReadEvent,
    Text,
    UpdatedEvent,
    UtcDatetime,
)

Credits = Annotated[int, Field(ge=0, le=60)]
Points = Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)]
Minutes = Annotated[int, Field(gt=0, le=24 * 60 * 14)]
Level = Literal["low", "medium", "high"]


def _check_span(start: object, end: object, what: str) -> None:
    if start is not None and end is not None and end <= start:  # type: ignore[operator]
        raise ValueError(f"{what}: the end must be after the start")


# --- course -------------------------------------------------------------------------------


class CourseCreatedEvent(BaseEvent):
    partition_key_field = "course_code"
    event_type: Literal["academic.course.created"] = "academic.course.created"
    course_code: Code
    course_name: Text
    semester: Text
    credits: Credits
    instructor: Text
    description: str | None = None
    department: Text | None = None


class CourseReadEvent(ReadEvent):
    partition_key_field = "course_code"
    event_type: Literal["academic.course.read"] = "academic.course.read"
    course_code: Code


class CourseUpdatedEvent(UpdatedEvent):
    partition_key_field = "course_code"
    event_type: Literal["academic.course.updated"] = "academic.course.updated"
    course_code: Code
    course_name: Text | None = None
    semester: Text | None = None
    credits: Credits | None = None
    instructor: Text | None = None
    description: str | None = None
    department: Text | None = None


class CourseDeletedEvent(DeletedEvent):
    partition_key_field = "course_code"
    event_type: Literal["academic.course.deleted"] = "academic.course.deleted"
    course_code: Code


# --- assignment ---------------------------------------------------------------------------

AssignmentType = Literal["homework", "project", "essay", "problem_set", "reading", "other"]


class AssignmentCreatedEvent(BaseEvent):
    partition_key_field = "assignment_id"
    event_type: Literal["academic.assignment.created"] = "academic.assignment.created"
    assignment_id: Code
    course_code: Code
    title: Text
    due_date: UtcDatetime
    max_points: Points
    assignment_type: AssignmentType = "homework"
    description: str | None = None


class AssignmentReadEvent(ReadEvent):
    partition_key_field = "assignment_id"
    event_type: Literal["academic.assignment.read"] = "academic.assignment.read"
    assignment_id: Code
    course_code: Code


class AssignmentUpdatedEvent(UpdatedEvent):
    partition_key_field = "assignment_id"
    event_type: Literal["academic.assignment.updated"] = "academic.assignment.updated"
    assignment_id: Code
    course_code: Code
    title: Text | None = None
    due_date: UtcDatetime | None = None
    max_points: Points | None = None
    assignment_type: AssignmentType | None = None
    description: str | None = None


class AssignmentDeletedEvent(DeletedEvent):
    partition_key_field = "assignment_id"
    event_type: Literal["academic.assignment.deleted"] = "academic.assignment.deleted"
    assignment_id: Code
    course_code: Code


# --- exam ---------------------------------------------------------------------------------

ExamType = Literal["midterm", "final", "practical", "oral", "other"]


class ExamCreatedEvent(BaseEvent):
    partition_key_field = "exam_id"
    event_type: Literal["academic.exam.created"] = "academic.exam.created"
    exam_id: Code
    course_code: Code
    title: Text
    exam_type: ExamType
    exam_date: UtcDatetime
    duration_minutes: Minutes
    location: Text | None = None
    weight_percent: Annotated[float, Field(ge=0, le=100)] | None = None


class ExamReadEvent(ReadEvent):
    partition_key_field = "exam_id"
    event_type: Literal["academic.exam.read"] = "academic.exam.read"
    exam_id: Code
    course_code: Code


class ExamUpdatedEvent(UpdatedEvent):
    partition_key_field = "exam_id"
    event_type: Literal["academic.exam.updated"] = "academic.exam.updated"
    exam_id: Code
    course_code: Code
    title: Text | None = None
    exam_type: ExamType | None = None
    exam_date: UtcDatetime | None = None
    duration_minutes: Minutes | None = None
    location: Text | None = None
    weight_percent: Annotated[float, Field(ge=0, le=100)] | None = None


class ExamDeletedEvent(DeletedEvent):
    partition_key_field = "exam_id"
    event_type: Literal["academic.exam.deleted"] = "academic.exam.deleted"
    exam_id: Code
    course_code: Code


# --- quiz ---------------------------------------------------------------------------------


class QuizCreatedEvent(BaseEvent):
    partition_key_field = "quiz_id"
    event_type: Literal["academic.quiz.created"] = "academic.quiz.created"
    quiz_id: Code
    course_code: Code
    title: Text
    due_date: UtcDatetime
    num_questions: Annotated[int, Field(gt=0, le=1000)]
    max_points: Points
    duration_minutes: Minutes | None = None


class QuizReadEvent(ReadEvent):
    partition_key_field = "quiz_id"
    event_type: Literal["academic.quiz.read"] = "academic.quiz.read"
    quiz_id: Code
    course_code: Code


class QuizUpdatedEvent(UpdatedEvent):
    partition_key_field = "quiz_id"
    event_type: Literal["academic.quiz.updated"] = "academic.quiz.updated"
    quiz_id: Code
    course_code: Code
    title: Text | None = None
    due_date: UtcDatetime | None = None
    num_questions: Annotated[int, Field(gt=0, le=1000)] | None = None
    max_points: Points | None = None
    duration_minutes: Minutes | None = None


class QuizDeletedEvent(DeletedEvent):
    partition_key_field = "quiz_id"
    event_type: Literal["academic.quiz.deleted"] = "academic.quiz.deleted"
    quiz_id: Code
    course_code: Code


# --- lab session --------------------------------------------------------------------------


class LabSessionCreatedEvent(BaseEvent):
    partition_key_field = "lab_id"
    event_type: Literal["academic.lab.created"] = "academic.lab.created"
    lab_id: Code
    course_code: Code
    title: Text
    start_time: UtcDatetime
    end_time: UtcDatetime
    location: Text
    instructor: Text | None = None

    @model_validator(mode="after")
    def _span(self) -> LabSessionCreatedEvent:
        _check_span(self.start_time, self.end_time, "lab session")
        return self


class LabSessionReadEvent(ReadEvent):
    partition_key_field = "lab_id"
    event_type: Literal["academic.lab.read"] = "academic.lab.read"
    lab_id: Code
    course_code: Code


class LabSessionUpdatedEvent(UpdatedEvent):
    partition_key_field = "lab_id"
    event_type: Literal["academic.lab.updated"] = "academic.lab.updated"
    lab_id: Code
    course_code: Code
    title: Text | None = None
    start_time: UtcDatetime | None = None
    end_time: UtcDatetime | None = None
    location: Text | None = None
    instructor: Text | None = None

    @model_validator(mode="after")
    def _span(self) -> LabSessionUpdatedEvent:
        _check_span(self.start_time, self.end_time, "lab session")
        return self


class LabSessionDeletedEvent(DeletedEvent):
    partition_key_field = "lab_id"
    event_type: Literal["academic.lab.deleted"] = "academic.lab.deleted"
    lab_id: Code
    course_code: Code


# --- study todo ---------------------------------------------------------------------------


class StudyTodoCreatedEvent(BaseEvent):
    partition_key_field = "todo_id"
    event_type: Literal["academic.study.created"] = "academic.study.created"
    todo_id: Code
    student_id: Code
    title: Text
    course_code: Code | None = None
    due_date: UtcDatetime | None = None
    priority: Level = "medium"
    estimated_minutes: Minutes | None = None
    description: str | None = None


class StudyTodoReadEvent(ReadEvent):
    partition_key_field = "todo_id"
    event_type: Literal["academic.study.read"] = "academic.study.read"
    todo_id: Code
    student_id: Code


class StudyTodoUpdatedEvent(UpdatedEvent):
    partition_key_field = "todo_id"
    event_type: Literal["academic.study.updated"] = "academic.study.updated"
    todo_id: Code
    student_id: Code
    title: Text | None = None
    course_code: Code | None = None
    due_date: UtcDatetime | None = None
    priority: Level | None = None
    estimated_minutes: Minutes | None = None
    completed: bool | None = None
    description: str | None = None


class StudyTodoDeletedEvent(DeletedEvent):
    partition_key_field = "todo_id"
    event_type: Literal["academic.study.deleted"] = "academic.study.deleted"
    todo_id: Code
    student_id: Code


# --- challenge area -----------------------------------------------------------------------


class ChallengeAreaCreatedEvent(BaseEvent):
    partition_key_field = "challenge_id"
    event_type: Literal["academic.challenge.created"] = "academic.challenge.created"
    challenge_id: Code
    student_id: Code
    course_code: Code
    topic: Text
    difficulty: Level
    description: str | None = None
    resources: tuple[Text, ...] = ()


class ChallengeAreaReadEvent(ReadEvent):
    partition_key_field = "challenge_id"
    event_type: Literal["academic.challenge.read"] = "academic.challenge.read"
    challenge_id: Code
    student_id: Code


class ChallengeAreaUpdatedEvent(UpdatedEvent):
    partition_key_field = "challenge_id"
    event_type: Literal["academic.challenge.updated"] = "academic.challenge.updated"
    challenge_id: Code
    student_id: Code
    topic: Text | None = None
    difficulty: Level | None = None
    description: str | None = None
    resources: tuple[Text, ...] | None = None
    resolved: bool | None = None


class ChallengeAreaDeletedEvent(DeletedEvent):
    partition_key_field = "challenge_id"
    event_type: Literal["academic.challenge.deleted"] = "academic.challenge.deleted"
    challenge_id: Code
    student_id: Code


# --- class schedule -----------------------------------------------------------------------

Recurrence = Literal["once", "weekly", "biweekly"]
DeliveryMode = Literal["in_person", "online", "hybrid"]


class ClassScheduleCreatedEvent(BaseEvent):
    """Version 2 adds ``delivery_mode``, which the notes service needs to open an online
    class's meeting note. Version 1 (``ClassScheduleCreatedEventV1``) put a meeting link in
    ``location``: :meth:`upcast` reads such a link as an online class."""

    partition_key_field = "schedule_id"
    event_type: Literal["academic.schedule.created"] = "academic.schedule.created"
    schema_version: Literal[2] = 2
    schedule_id: Code
    course_code: Code
    starts_at: UtcDatetime
    ends_at: UtcDatetime
    location: Text
    recurrence: Recurrence = "weekly"
    repeat_until: UtcDatetime | None = None
    instructor: Text | None = None
    delivery_mode: DeliveryMode = "in_person"

    @classmethod
    def upcast(cls, previous: dict[str, Any]) -> dict[str, Any]:
        """v1 -> v2: a location that is a link means the class met online.

        >>> ClassScheduleCreatedEvent.upcast({"location": "https://meet.example/cs101"})
        {'location': 'https://meet.example/cs101', 'schema_version': 2, 'delivery_mode': 'online'}
        """
        location = str(previous.get("location", "")).strip().lower()
        online = location.startswith(("http://", "https://"))
        mode = "online" if online else "in_person"
        return {**previous, "schema_version": 2, "delivery_mode": mode}

    @model_validator(mode="after")
    def _span(self) -> ClassScheduleCreatedEvent:
        _check_span(self.starts_at, self.ends_at, "class schedule")
        _check_span(self.starts_at, self.repeat_until, "class schedule repeat_until")
        return self


class ClassScheduleReadEvent(ReadEvent):
    partition_key_field = "schedule_id"
    event_type: Literal["academic.schedule.read"] = "academic.schedule.read"
    schedule_id: Code
    course_code: Code


class ClassScheduleUpdatedEvent(UpdatedEvent):
    partition_key_field = "schedule_id"
    event_type: Literal["academic.schedule.updated"] = "academic.schedule.updated"
    schedule_id: Code
    course_code: Code
    starts_at: UtcDatetime | None = None
    ends_at: UtcDatetime | None = None
    location: Text | None = None
    recurrence: Recurrence | None = None
    repeat_until: UtcDatetime | None = None
    instructor: Text | None = None

    @model_validator(mode="after")
    def _span(self) -> ClassScheduleUpdatedEvent:
        _check_span(self.starts_at, self.ends_at, "class schedule")
        return self


class ClassScheduleDeletedEvent(DeletedEvent):
    partition_key_field = "schedule_id"
    event_type: Literal["academic.schedule.deleted"] = "academic.schedule.deleted"
    schedule_id: Code
    course_code: Code


ACADEMIC_EVENTS: tuple[type[BaseEvent], ...] = (
    CourseCreatedEvent, CourseReadEvent, CourseUpdatedEvent, CourseDeletedEvent,
    AssignmentCreatedEvent, AssignmentReadEvent, AssignmentUpdatedEvent, AssignmentDeletedEvent,
    ExamCreatedEvent, ExamReadEvent, ExamUpdatedEvent, ExamDeletedEvent,
    QuizCreatedEvent, QuizReadEvent, QuizUpdatedEvent, QuizDeletedEvent,
    LabSessionCreatedEvent, LabSessionReadEvent, LabSessionUpdatedEvent, LabSessionDeletedEvent,
    StudyTodoCreatedEvent, StudyTodoReadEvent, StudyTodoUpdatedEvent, StudyTodoDeletedEvent,
    ChallengeAreaCreatedEvent, ChallengeAreaReadEvent, ChallengeAreaUpdatedEvent,
    ChallengeAreaDeletedEvent,
    ClassScheduleCreatedEvent, ClassScheduleReadEvent, ClassScheduleUpdatedEvent,
    ClassScheduleDeletedEvent,
)  # fmt: skip
