"""warren.amqp"""
