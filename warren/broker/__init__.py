"""warren.broker"""
