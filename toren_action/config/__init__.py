"""What a job is asked to do: the settings (one typed object, schema-checked), input validators and the task.
Imports only toren_action.core."""
