"""warren.store"""
