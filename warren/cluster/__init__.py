"""warren.cluster"""
