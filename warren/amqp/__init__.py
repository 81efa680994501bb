"""warren.amqp"""

from warren.amqp.names import relax_name_validation

# Before any module builds a pamqp method: RabbitMQ's name rule, not the spec's regex.
relax_name_validation()
