"""warren.node"""
